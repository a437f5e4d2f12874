vcl 4.1;
# Demo front cache: PURGEs are forwarded to the peer cache in the background with
# peer.queue_req(); two origins, each wrapped in saintmode, behind a fallback director.
# @PEER_VMOD@, @SAINTMODE_VMOD@, @ORIGIN_A@, @ORIGIN_B@, @PEER_PORT@ are filled in by
# scripts/demo.sh.

import peer from "@PEER_VMOD@";
import saintmode from "@SAINTMODE_VMOD@";
import directors;
import std;

backend origin_a { .host = "127.0.0.1"; .port = "@ORIGIN_A@"; }
backend origin_b { .host = "127.0.0.1"; .port = "@ORIGIN_B@"; }

acl purgers { "127.0.0.1"; }

sub vcl_init {
    peer.set("127.0.0.1", @PEER_PORT@);
    new sm_a = saintmode.saintmode(origin_a, 10);
    new sm_b = saintmode.saintmode(origin_b, 10);
    # origin_b is tried first; objects it fails on are blacklisted and go to origin_a.
    new origins = directors.fallback();
    origins.add_backend(sm_b.backend());
    origins.add_backend(sm_a.backend());
}

sub vcl_recv {
    if (req.url == "/saintmode-status") {
        return (synth(200, "status"));
    }
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        # Queued for the peer cache; the worker does not wait for it.
        peer.queue_req();
        return (purge);
    }
    set req.backend_hint = origins.backend();
}

sub vcl_backend_response {
    if (beresp.status >= 500) {
        # This origin is sick for this object for 20 s; retry goes to the other one.
        saintmode.blacklist(20s);
        return (retry);
    }
}

sub vcl_synth {
    if (req.url == "/saintmode-status") {
        set resp.http.Content-Type = "application/json";
        set resp.body = saintmode.status() + {"
"};
        return (deliver);
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    set resp.http.X-Peer-Pending = peer.pending();
}
