"""The Kubernetes objects Skein reads (model) and where they come from (sources):
a multi-document manifests file, or the API server."""
