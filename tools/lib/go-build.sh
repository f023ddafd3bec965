# Builds a Go program of a tools/ module into the cache outside the clone, once per content.
# Sourced by tools/*/build.
#
#   go_build_cached SRC_DIR BIN PKG [LDFLAGS]
#
# BIN is rebuilt only when the SHA-256 of what it is built from differs from the one kept in
# BIN.inputs: every *.go file, go.mod and go.sum of SRC_DIR, the calling build script, this
# file, the Go version, the package and the link flags. A content stamp, not a timestamp, so
# a fresh clone (whose files are all new) reuses what an earlier run built.
# Progress goes to stderr.

go_build_inputs() {
  local src="$1" pkg="$2" ldflags="$3"
  {
    (cd "$src" && sha256sum ./*.go go.mod go.sum 2>/dev/null) || true
    sha256sum "$0" "${BASH_SOURCE[0]}" | awk '{print $1}'
    go env GOVERSION
    printf '%s\n%s\n' "$pkg" "$ldflags"
  } | sha256sum | awk '{print $1}'
}

go_build_cached() {
  local src="$1" bin="$2" pkg="$3" ldflags="${4:--s -w}"
  local name want
  name="$(basename "$src")/build"
  want="$(go_build_inputs "$src" "$pkg" "$ldflags")"
  if [[ -x "$bin" && -f "$bin.inputs" && "$(cat "$bin.inputs")" == "$want" ]]; then
    echo "$name: $bin is up to date" >&2
    return 0
  fi
  echo "$name: building $bin" >&2
  local started=$SECONDS tmp="$bin.tmp.$$"
  if ! (cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp" "$pkg"); then
    rm -f "$tmp"
    return 1
  fi
  mv -f "$tmp" "$bin"
  echo "$want" >"$bin.inputs"
  echo "$name: built $(basename "$bin") in $((SECONDS - started))s" >&2
}
