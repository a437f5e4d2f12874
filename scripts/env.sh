#!/usr/bin/env bash
# Prints `export` lines that put the Varnish in use (system or the cached build made by
# bootstrap.sh) first on PATH and PKG_CONFIG_PATH. Usage: eval "$(scripts/env.sh)".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=$("$here/bootstrap.sh")
if [ "$prefix" = system ]; then
    echo "# using the system's Varnish: nothing to change"
    echo "export VARNISH_PREFIX_IN_USE=system"
    exit 0
fi
cat <<EOT
export PATH="$prefix/bin:$prefix/sbin:\$PATH"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
export ACLOCAL_PATH="$prefix/share/aclocal\${ACLOCAL_PATH:+:\$ACLOCAL_PATH}"
export VARNISH_PREFIX_IN_USE="$prefix"
EOT
