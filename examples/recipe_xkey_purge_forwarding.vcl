vcl 4.1;
# Recipe: xkey / surrogate-key purge forwarding. This Varnish receives key purges (a PURGE
# with an `xkey-purge` or `xkey-softpurge` header listing keys, as vmod_xkey expects) and
# forwards them to every cache node of the cluster, which purges its objects tagged with
# those keys with vmod_xkey:
#
#     if (req.http.xkey-purge && client.ip ~ purgers) {
#         set req.http.n-gone = xkey.purge(req.http.xkey-purge);
#         return (synth(200, "Invalidated " + req.http.n-gone + " objects"));
#     }
#
# (a cache node that also forwards skips requests that carry X-Peer-Forwarded, as in
# recipe_peer_caches_purge_and_ban.vcl).
#
# Addresses: the cache nodes 127.0.0.1:8081 and :8082.

import peer;

backend default none;

acl purgers { "127.0.0.1"; "::1"; }

sub vcl_init {
    # The request is copied with its headers (the key list among them), minus the client's
    # credentials.
    new nodes = peer.peer(max_attempts = 10, max_age = 5m);
    nodes.add_destination("127.0.0.1", 8081);
    nodes.add_destination("127.0.0.1", 8082);
    nodes.unset_header("Cookie");
    nodes.unset_header("Authorization");
}

sub vcl_recv {
    if (req.http.xkey-purge || req.http.xkey-softpurge) {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        nodes.queue_req();
        return (synth(202, "Forwarded"));
    }
    return (synth(404));
}
