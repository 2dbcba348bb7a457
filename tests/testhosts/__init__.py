"""Test hosts for BrokeForge: a real Debian chroot and a scripted SSH server."""
