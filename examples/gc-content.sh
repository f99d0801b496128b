#!/bin/sh
# GC content of one FASTA fragment: the example program for `hz local`.
# herzog runs it once per file as `gc-content.sh <path>`; what it prints is kept as the
# attempt's stdout under the project's results folder.
set -eu
awk -v file="$(basename "$1")" '
    /^>/ { next }
    { n += length($0); gc += gsub(/[GCgc]/, "") }
    END {
        if (n == 0) { print file ": empty" > "/dev/stderr"; exit 1 }
        printf "%s\tlength=%d\tgc=%.4f\n", file, n, gc / n
    }' "$1"
