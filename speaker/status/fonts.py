"""How wide a text really is, for the picture: so no text runs over its box's border.

Graphviz measures a label with hinted metrics at 72 dpi: at 10 points a DejaVu Sans
digit counts as 6 points instead of 6.36, so a line of addresses comes out ~6 %
narrower than an SVG viewer draws it, and runs over the border of a box sized to
it.  The picture therefore sizes its boxes itself (a box's `width` is a minimum in
Graphviz) with the real advance widths of DejaVu Sans: the face fontconfig gives for
"Helvetica" here, and the widest of the sans faces a viewer puts in its place
(Helvetica, Arial, Liberation Sans are narrower), so text that fits with these widths
fits in every viewer.  The tables are the fonts' advance widths (hmtx, in 1/1000 em)
for printable ASCII and the few symbols the picture uses.
"""

from __future__ import annotations

CHARS = (" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
         "abcdefghijklmnopqrstuvwxyz{|}~·⇄→←…—–⁄")
_REGULAR = (
    "318,401,460,838,636,950,780,275,390,390,500,838,318,361,318,337,636,636,636,636,636,"
    "636,636,636,636,636,337,337,838,838,838,531,1000,684,686,698,770,632,575,775,752,295,"
    "295,656,557,863,748,787,603,787,695,635,611,732,684,989,685,611,685,390,337,390,838,"
    "500,500,613,635,550,635,615,352,635,634,278,278,579,278,974,634,612,635,635,411,521,"
    "392,634,592,818,592,592,525,636,337,636,838,318,838,838,838,1000,1000,500,167")
_BOLD = (
    "348,456,521,838,696,1002,872,306,457,457,523,838,380,415,380,365,696,696,696,696,696,"
    "696,696,696,696,696,400,400,838,838,838,580,1000,774,762,734,830,683,683,821,837,372,"
    "372,775,637,995,837,850,733,850,770,720,682,812,774,1103,771,724,725,457,365,457,838,"
    "500,500,675,716,593,716,678,435,716,712,343,343,665,343,1042,712,687,716,716,493,595,"
    "478,712,652,924,645,652,582,712,365,712,838,380,838,838,838,1000,1000,500,167")
REGULAR = dict(zip(CHARS, (int(w) / 1000 for w in _REGULAR.split(",")), strict=True))
BOLD = dict(zip(CHARS, (int(w) / 1000 for w in _BOLD.split(",")), strict=True))
REGULAR["\u00a0"] = REGULAR[" "]
BOLD["\u00a0"] = BOLD[" "]
WIDEST = 1.0  # anything else (a name in another script): as wide as the widest here


def text_width(text: str, size: float, bold: bool = False) -> float:
    """The width in points of `text` at `size` points, as a viewer draws it."""
    table = BOLD if bold else REGULAR
    return sum(table.get(ch, WIDEST) for ch in text) * size
