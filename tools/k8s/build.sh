echo "control plane build: not yet"
