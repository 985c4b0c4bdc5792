#!/bin/sh
# Debian's packages the test suite uses, installed with apt-get (through sudo only when not root):
#   chromium        the explorer's browser tests (required when CONVNET_REQUIRE_BROWSER=1)
#   fonts-*         handwriting fonts for the "fonts" set of experiments.handwriting_sets
#                   (optional: those tests skip without them)
# Safe to run again: apt-get skips what is installed. The package lists are refreshed only when an
# install fails, as on a fresh machine that has none.
set -e
PACKAGES="chromium fonts-comic-neue fonts-dkg-handwriting fonts-breip fonts-bwht fonts-humor-sans
fonts-kristi fonts-dancingscript fonts-rufscript fonts-kaushanscript fonts-klee"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # the list is meant to split into words
$SUDO apt-get install -y $PACKAGES ||
    { $SUDO apt-get update && $SUDO apt-get install -y $PACKAGES; }
