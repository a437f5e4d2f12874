vcl 4.1;
# Purge fan-out: a PURGE accepted here is applied locally, copied to the two other
# caches of the cluster, and sent to a CDN purge API as POST /purge with a JSON body
# and an API token. The worker never waits for any of them.
#
# Addresses: origin 127.0.0.1:8080, peer caches 127.0.0.1:8081 and :8082, CDN API
# http://127.0.0.1:8090/v1 (in production: https://, verified against the system CAs).
# Only the hosts of the `purgers` ACL may purge, and so make this cache call the others
# and the API.

import peer;

backend origin { .host = "127.0.0.1"; .port = "8080"; }

acl purgers { "127.0.0.1"; "::1"; }

sub vcl_init {
    # The other caches: one queue and one sender per destination, FIFO each.
    new caches = peer.peer(max_attempts = 10, max_age = 2m);
    caches.add_destination("127.0.0.1", 8081);
    caches.add_destination("127.0.0.1", 8082);
    caches.unset_header("Cookie");
    caches.unset_header("Authorization");

    # The CDN API gets only the headers set here: never the client's.
    new cdn = peer.peer(copy_headers = false, max_attempts = 8, max_age = 10m);
    cdn.add_destination("http://127.0.0.1:8090/v1");
    cdn.set_header("Authorization", "Bearer example-token");
    cdn.set_header("Content-Type", "application/json");
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        if (req.http.X-Peer-Forwarded) {
            # Copied here by a peer: purge, never forward again (no loops).
            return (purge);
        }
        caches.queue_req();
        # json_string() quotes and escapes: a crafted Host or URL stays one JSON
        # string and cannot add keys (e.g. "purge_everything") to the API call.
        cdn.queue_req_body({"{"host":"} + peer.json_string(req.http.host) +
            {","path":"} + peer.json_string(req.url) + "}",
            method = "POST", url = "/purge");
        return (purge);
    }
}

sub vcl_deliver {
    set resp.http.X-Peer-Pending = caches.pending() + cdn.pending();
}
