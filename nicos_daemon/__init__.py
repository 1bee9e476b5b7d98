"""The daemon service: network server, authentication and the script thread."""
