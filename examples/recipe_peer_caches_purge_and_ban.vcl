vcl 4.1;
# Recipe: peer caches. A PURGE or a BAN accepted here is applied locally and copied to the
# other caches of the cluster. The copies carry X-Peer-Forwarded and are applied but never
# copied again (loop prevention): every cache of the cluster can run this same VCL, with
# the others as destinations.
#
# Addresses: origin 127.0.0.1:8080, the other caches 127.0.0.1:8081 and :8082.
# A BAN's URL is the prefix of the paths to ban, e.g. `BAN /images/` bans /images/a.png
# but not /y/images/ nor /imagesX; the prefix is matched as it is, not as a regular
# expression (`BAN /a.c` does not ban /abc).

import std;
import peer;

backend origin { .host = "127.0.0.1"; .port = "8080"; }

acl purgers { "127.0.0.1"; "::1"; }

sub vcl_init {
    new caches = peer.peer(max_attempts = 10, max_age = 2m);
    caches.add_destination("127.0.0.1", 8081);
    caches.add_destination("127.0.0.1", 8082);
    caches.unset_header("Cookie");
}

sub vcl_recv {
    if (req.method == "PURGE" || req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        if (!req.http.X-Peer-Forwarded) {
            # From a client: copied as it is (method, URL, Host) to every other cache.
            caches.queue_req();
        }
        if (req.method == "BAN") {
            # Tested against the objects (lurker-friendly), see vcl_backend_response. The
            # URL is anchored and its regular expression metacharacters are escaped, so it
            # bans that prefix and nothing else (a URL has no space to end the expression).
            if (std.ban("obj.http.x-url ~ ^" +
                regsuball(req.url, {"([][\\^$.|?*+(){}])"}, {"\\\1"}))) {
                return (synth(200, "Banned"));
            }
            return (synth(400, std.ban_error()));
        }
        return (purge);
    }
}

sub vcl_backend_response {
    set beresp.http.x-url = bereq.url;
}

sub vcl_deliver {
    unset resp.http.x-url;
}
