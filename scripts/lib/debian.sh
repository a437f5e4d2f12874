# Sourced by scripts/bootstrap.sh and bench/lib/tools.sh: the one implementation of
# "install Debian packages", "find a package in a Debian index through a private apt
# configuration", and "download a file from the mirror and verify its sha256".
#
# No registry host is written here: the mirror is the one this machine's apt configuration
# already uses (mirror_uri), or DEBIAN_MIRROR when set (the offline tests point it at a
# mirror they serve on loopback, with DEBIAN_KEYRING naming the key that signs it).

# ensure_debs PKG...: installs the packages that are missing (apt-get update once first).
# Returns non-zero when apt fails; the caller says what to do.
ensure_debs() {
    local p missing=() sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    printf 'installing Debian packages: %s\n' "${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq >&2 || return 1
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# mirror_uri: DEBIAN_MIRROR when set, else the Debian mirror this machine's apt
# configuration already uses (first non-security entry whose URI ends in /debian).
mirror_uri() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
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

# apt_private DIR LINE...: a private apt configuration in DIR (its own sources list, lists
# and cache; the system's apt state is untouched) holding the given sources.list LINEs,
# in which "@MIRROR@" stands for mirror_uri and "@KEYRING@" for the archive keyring
# (DEBIAN_KEYRING, default Debian's). Sets APT_OPTS for apt-get/apt-cache and runs
# `apt-get update` (InRelease signatures checked by apt). On failure returns 1 with the
# reason in APT_ERR.
APT_OPTS=()
APT_ERR=""
apt_private() {
    local dir=$1 mirror keyring line out; shift
    mirror=$(mirror_uri)
    if [ -z "$mirror" ]; then
        APT_ERR="no Debian mirror found in /etc/apt/sources.list* (set DEBIAN_MIRROR to one)"; return 1
    fi
    keyring=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc"
    : > "$dir/etc/sources.list"
    for line in "$@"; do
        line=${line//@MIRROR@/$mirror}
        echo "${line//@KEYRING@/$keyring}" >> "$dir/etc/sources.list"
    done
    APT_OPTS=(-o "Dir::Etc::SourceList=$dir/etc/sources.list"
              -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$dir/lists"
              -o "Dir::Cache=$dir/cache"
              -o "Acquire::Languages=none"
              -o "Acquire::Retries=2"
              -o "Acquire::http::Timeout=20"
              -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
              -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
              -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
              -o "APT::Sandbox::User=root")
    # (Sandbox user root: apt's _apt user cannot write into a cache under root's home.)
    # apt-get update exits 0 on some fetch failures and reports them as "W:"/"E:" lines.
    if ! out=$(apt-get "${APT_OPTS[@]}" update -q 2>&1) \
       || grep -qE '^(E: |W: (Failed|The repository|GPG|Some index|.*signature|.*Release))' <<<"$out"; then
        # apt's own E:/W: lines say why; without any, its last lines.
        local why
        why=$(grep -E '^(E|W):' <<<"$out" | head -n 3) || why=$(tail -n 2 <<<"$out")
        APT_ERR="apt-get update from $mirror failed: $(tr '\n' ' ' <<<"$why")"
        return 1
    fi
}

# sources_entry DIR SUITE PACKAGE: from the Sources index fetched by apt_private in DIR,
# prints the source package's newest paragraph as "Version Directory" on the first line,
# then one "sha256 name" line per file. Returns 1 when no index can be read, 2 when the
# index has no such package.
sources_entry() {
    local dir=$1 suite=$2 pkg=$3 index cat text
    index=$(ls "$dir"/lists/*_dists_"${suite}"_main_source_Sources* 2>/dev/null | grep -v '\.diff' | head -n1)
    [ -n "$index" ] || return 1
    case "$index" in
        *.lz4) cat="lz4cat" ;; *.gz) cat="zcat" ;; *.xz) cat="xzcat" ;; *.zst) cat="zstdcat" ;; *) cat="cat" ;;
    esac
    text=$($cat "$index") || return 1
    awk -v pkg="$pkg" '
        BEGIN{RS=""; FS="\n"}
        $1 == "Package: " pkg {
            ver=""; dir=""; inx=0; files="";
            for (i=1;i<=NF;i++) {
                if ($i ~ /^Version:/)   { ver=$i; sub(/^Version:[ \t]*/,"",ver) }
                if ($i ~ /^Directory:/) { dir=$i; sub(/^Directory:[ \t]*/,"",dir) }
                if ($i ~ /^Checksums-Sha256:/) { inx=1; continue }
                if (inx && $i ~ /^ /) { split($i,a," "); files=files a[1] " " a[3] "\n" }
                else if (inx) inx=0
            }
            # Several paragraphs (several versions): keep the newest, compared by dpkg.
            if (best == "" || system("dpkg --compare-versions \"" ver "\" gt \"" best "\"") == 0) {
                best=ver; out=ver " " dir "\n" files
            }
        }
        END { if (best == "") exit 2; printf "%s", out }' <<<"$text"
}

# debian_pool_url MIRROR DIRECTORY NAME: the URL of a file of the pool ("+" escaped, as in
# Debian's own URLs).
debian_pool_url() {
    printf '%s/%s/%s' "${1%/}" "$2" "$(sed 's/+/%2b/g' <<<"$3")"
}

# fetch_verified URL FILE SHA256: FILE is kept when it already has that sha256, else
# downloaded from URL and checked. Returns 0 when FILE is verified; otherwise FETCH_ERR says
# what failed and the return code says which kind: 2 = not on the mirror (HTTP 404/410),
# 3 = mirror unreachable or other download error, 4 = checksum mismatch (FILE removed).
FETCH_ERR=""
fetch_verified() {
    local url=$1 file=$2 sha=$3 code got name
    name=$(basename "$file")
    if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --status; then return 0; fi
    rm -f "$file" "$file.part"
    mkdir -p "$(dirname "$file")"
    code=$(curl -sSL --retry 2 --connect-timeout 15 --max-time 600 -o "$file.part" -w '%{http_code}' "$url" 2>"$file.err") || true
    case "$code" in
        200) ;;
        404|410) FETCH_ERR="$name: HTTP $code at $url (the mirror does not have it)"; rm -f "$file.part" "$file.err"; return 2 ;;
        000|"") FETCH_ERR="$name: cannot reach $url: $(tr '\n' ' ' < "$file.err")"; rm -f "$file.part" "$file.err"; return 3 ;;
        *) FETCH_ERR="$name: HTTP $code at $url"; rm -f "$file.part" "$file.err"; return 3 ;;
    esac
    rm -f "$file.err"
    got=$(sha256sum "$file.part" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        rm -f "$file.part"
        FETCH_ERR="$name: checksum mismatch (expected sha256 $sha, got $got from $url); file removed"
        return 4
    fi
    mv "$file.part" "$file"
}
