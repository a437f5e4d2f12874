vcl 4.1;
# Demo peer cache: caches origin_a and honours PURGE from loopback.

backend origin_a { .host = "127.0.0.1"; .port = "@ORIGIN_A@"; }

acl purgers { "127.0.0.1"; }

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        return (purge);
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
