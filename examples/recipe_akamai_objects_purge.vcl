vcl 4.1;
# Recipe: Akamai Fast Purge (CCU v3) by URL, batched. Every PURGE accepted here is applied
# locally and its full URL goes to Akamai in batches:
# POST /ccu/v3/invalidate/url/production {"objects":["https://...",...]}, at most 200 URLs
# a call, or one call per 5 seconds after the first URL of a batch was queued. Akamai
# answers 201 when it accepts a call; on 429 ("wait, then retry") the batch is retried whole
# after the Retry-After it gives or the backoff (5 s, doubling, at most 1 minute).
# max_backoff (1 minute) also caps how long a Retry-After pauses the whole destination;
# the throttled batch itself still waits the full Retry-After.
#
# Akamai authenticates every call with an EdgeGrid signature computed over that call
# (timestamp, nonce, body hash), which no fixed header can carry: the calls go through a
# signing relay on this host (127.0.0.1:8095 here: any HTTP proxy that adds the EdgeGrid
# Authorization header and forwards to your https://akab-....purge.akamaiapis.net host).

import peer;

backend origin { .host = "127.0.0.1"; .port = "8080"; }

acl purgers { "127.0.0.1"; "::1"; }

sub vcl_init {
    new akamai = peer.peer(copy_headers = false, queue_size = 100000, max_attempts = 20,
        backoff = 5s, max_backoff = 1m, max_age = 15m);
    akamai.add_destination("http://127.0.0.1:8095");
    akamai.set_header("Content-Type", "application/json");
    akamai.set_header("Accept", "application/json");
    akamai.set_batch(url = "/ccu/v3/invalidate/url/production",
        body = {"{"objects":[{items}]}"}, max_items = 200, window = 5s);
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        akamai.queue_item("https://" + req.http.host + req.url);
        return (purge);
    }
}
