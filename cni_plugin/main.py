"""Entry point of the `skein` CNI plugin executable."""

from cni_plugin.plugin import SkeinPlugin
from cni_plugin.skel import run


def main() -> None:
    run(SkeinPlugin())


if __name__ == "__main__":
    main()
