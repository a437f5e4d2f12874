# shellcheck shell=bash
# Sourced by bench/run.sh and bench/callgrind_saintmode.sh: one VCL for the saintmode figures.

# Measured instance for the saintmode figures: /sm/* through the saintmode director, anything
# else straight to the same origin; /bl/* (through the director) and /blp/* (fetched from the wrapped
# backend directly, which both implementations accept as "this backend") responses are
# blacklisted; /count reports the list size.
# varnish-modules 0.25 calls them denylist()/denylist_count(); the seed interface says blacklist.
vcl_saintmode() { # file so origin_port [verb: blacklist|denylist]
    local verb=${4:-blacklist}
    cat > "$1" <<EOF
vcl 4.1;
import saintmode from "$2";
backend origin { .host = "127.0.0.1"; .port = "$3"; }
sub vcl_init { new sm = saintmode.saintmode(origin, 100000000); }
sub vcl_recv {
    if (req.url == "/count") { return (synth(200)); }
    if (req.url ~ "^/(sm|bl|warm)/") {
        set req.backend_hint = sm.backend();
    } else {
        set req.backend_hint = origin;
    }
    return (pass);
}
sub vcl_backend_response {
    if (bereq.url ~ "^/(bl|blp)/") { saintmode.$verb(1h); }
}
sub vcl_synth {
    set resp.http.X-Count = sm.${verb}_count();
    synthetic("ok");
    return (deliver);
}
EOF
}
