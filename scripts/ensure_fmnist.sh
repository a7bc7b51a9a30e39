#!/usr/bin/env bash
# Make sure the real Fashion-MNIST idx files are on this machine (Debian package dataset-fashion-mnist).
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if [ -n "${FMNIST_DIR:-}" ] && [ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "Installing Debian package dataset-fashion-mnist (real Fashion-MNIST images, 31 MB)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  exit 0
fi
cat >&2 <<MSG
Fashion-MNIST is not on this machine. pot_nb builds its demo benchmark from the real images. Either
  - on Debian/Ubuntu as root:   apt-get install dataset-fashion-mnist   (files in $DIR), or
  - put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
    t10k-labels-idx1-ubyte.gz in a folder and set FMNIST_DIR=/that/folder, or
  - on a machine with internet, pot_nb downloads them with torchvision.datasets.FashionMNIST.
Continuing: parts that need the images will say so.
MSG
exit 0
