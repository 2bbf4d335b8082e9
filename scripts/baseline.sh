# Sourced by the bench scripts: `build_baseline <commit> <copy-to>` builds
# the release binary of another commit, in a git worktree of its own under
# ~/.cache/recon-bench-baseline (kept for the next time), and copies it to
# <copy-to>. It shares the checkout's target directory: the dependencies
# are built once for both (cargo names the two checkouts' own crates
# alike, so those are built again for each). Call it after the checkout's
# own build and copy (the binary's path is shared). Expects ROOT and log().

build_baseline() {
  local commit dir
  commit="$(git -C "$ROOT" rev-parse --verify "$1^{commit}")"
  dir="${HOME}/.cache/recon-bench-baseline/$commit"
  if [ ! -d "$dir/src" ]; then
    mkdir -p "$dir"
    git -C "$ROOT" worktree add --detach "$dir/src" "$commit" >/dev/null
  fi
  log "building the baseline $commit"
  local target="${CARGO_TARGET_DIR:-$ROOT/target}"
  (cd "$dir/src" && CARGO_TARGET_DIR="$target" cargo build --release --locked -p recon)
  cp "$target/release/recon" "$2"
}
