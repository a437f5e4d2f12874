vcl 4.1;
# One node of the demo cluster: every node runs this VCL; @PEER1@ and @PEER2@ are the
# other two nodes. A PURGE from a client is applied here and copied to both; a PURGE
# copied by a peer (X-Peer-Forwarded) is applied and not copied again.

import peer from "@PEER_VMOD@";

backend origin { .host = "127.0.0.1"; .port = "@ORIGIN@"; }

acl purgers { "127.0.0.1"; }

sub vcl_init {
    new cluster = peer.peer(backoff = 0.5s, max_attempts = 20, max_age = 5m);
    cluster.add_destination("127.0.0.1", @PEER1@);
    cluster.add_destination("127.0.0.1", @PEER2@);
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        if (!req.http.X-Peer-Forwarded) {
            cluster.queue_req();
        }
        return (purge);
    }
}

sub vcl_deliver {
    set resp.http.X-Node = server.identity;
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
