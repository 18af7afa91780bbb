"""KubeSource and the controller in API mode, against an API-server stand-in."""
