#!/bin/sh
# Run by the Dockerfile's build stage in the workspace root. The build context
# (.dockerignore) holds every member's Cargo.toml but only the sources web-app is
# built from; cargo still loads the whole workspace, and a member it cannot load
# (no src/, a declared bench or test without its file) stops the build. This gives
# each member without sources an empty crate: src/lib.rs, src/main.rs and one
# `fn main() {}` per declared [[bin]], [[bench]], [[test]] and [[example]]. Their
# manifests stay as they are, so the resolution, and `--locked` against the real
# Cargo.lock, are exactly the repository's.
set -eu
for manifest in */Cargo.toml; do
  crate="${manifest%/Cargo.toml}"
  [ -d "$crate/src" ] && continue
  mkdir -p "$crate/src"
  : >"$crate/src/lib.rs"
  echo 'fn main() {}' >"$crate/src/main.rs"
  awk -v crate="$crate" '
    function flush() {
      if (kind != "" && (name != "" || path != "")) {
        dir = kind == "bin" ? "src/bin" : kind == "bench" ? "benches" : kind "s"
        print crate "/" (path != "" ? path : dir "/" name ".rs")
      }
      kind = ""; name = ""; path = ""
    }
    function value(line) { sub(/^[^"]*"/, "", line); sub(/".*$/, "", line); return line }
    /^\[/ { flush() }
    /^\[\[(bin|bench|test|example)\]\]/ { kind = substr($0, 3, length($0) - 4) }
    kind != "" && /^name *=/ { name = value($0) }
    kind != "" && /^path *=/ { path = value($0) }
    END { flush() }
  ' "$manifest" | while read -r file; do
    mkdir -p "$(dirname "$file")"
    [ -f "$file" ] || echo 'fn main() {}' >"$file"
  done
done
