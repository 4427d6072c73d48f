"""System tests: the shipped unit under a real systemd, the shipped Containerfile under podman."""
