# Sourced by scripts/bootstrap.sh and bench/lib/tools.sh: Debian helpers shared by the
# scripts that install packages or fetch Debian sources and binaries.

# ensure_debs PKG...: installs the packages that are missing (apt-get update once first).
# Returns non-zero when apt fails; the caller says what to do.
ensure_debs() {
    local p missing=() sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    printf 'installing Debian packages: %s\n' "${missing[*]}" >&2
    $sudo apt-get update -qq >&2 || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# mirror_uri: the Debian mirror this machine's apt configuration already uses (first
# non-security entry whose URI ends in /debian), so that no registry host is written
# into the repository.
mirror_uri() {
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '
            BEGIN{RS=""; FS="\n"}
            {
              u=""; s=""; t="";
              for (i=1;i<=NF;i++) {
                if ($i ~ /^URIs:/)   { u=$i; sub(/^URIs:[ \t]*/,"",u) }
                if ($i ~ /^Suites:/) { s=$i }
                if ($i ~ /^Types:/)  { t=$i }
              }
              if (t ~ /deb/ && s !~ /security/ && u ~ /debian\/?$/) { split(u,a," "); print a[1]; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 ~ /^deb(-src)?$/ && $0 !~ /security/ {
                  for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { if ($i ~ /debian\/?$/) { print $i; exit } } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
}
