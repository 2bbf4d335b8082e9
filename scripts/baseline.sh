# Sourced by the bench scripts: `build_baseline <commit> <copy-to>` builds
# the release binary of another commit, in a git worktree and target
# directory of its own under ~/.cache/recon-bench-baseline (kept for the
# next time), and copies it to <copy-to>. Expects ROOT and log().

build_baseline() {
  local commit dir
  commit="$(git -C "$ROOT" rev-parse --verify "$1^{commit}")"
  dir="${HOME}/.cache/recon-bench-baseline/$commit"
  if [ ! -d "$dir/src" ]; then
    mkdir -p "$dir"
    git -C "$ROOT" worktree add --detach "$dir/src" "$commit" >/dev/null
  fi
  log "building the baseline $commit"
  (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --release --locked -p recon)
  cp "$dir/target/release/recon" "$2"
}
