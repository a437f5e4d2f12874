vcl 4.1;
# Recipe: Cloudflare purge by URL, batched. Every PURGE accepted here is applied locally
# and its full URL goes to Cloudflare's purge_cache API in batches:
# POST /zones/<zone>/purge_cache {"files":["https://...",...]}, at most 100 URLs a call,
# or one call per 5 seconds after the first URL of a batch was queued. Each URL is escaped
# as a JSON string by the module. When Cloudflare answers 429 (over its rate), the batch is
# retried whole after the Retry-After it gives, or after the backoff (5 s, doubling, at
# most 1 minute) without one; URLs older than max_age (15 minutes) are dropped from it as
# expired. max_backoff (1 minute) also caps how long a Retry-After pauses the whole
# destination; the throttled batch itself still waits the full Retry-After.
#
# Replace ZONE_ID and YOUR_API_TOKEN.

import peer;

backend origin { .host = "127.0.0.1"; .port = "8080"; }

acl purgers { "127.0.0.1"; "::1"; }

sub vcl_init {
    new cloudflare = peer.peer(copy_headers = false, queue_size = 100000,
        max_attempts = 20, backoff = 5s, max_backoff = 1m, max_age = 15m);
    cloudflare.add_destination("https://api.cloudflare.com/client/v4");
    cloudflare.set_header("Authorization", "Bearer YOUR_API_TOKEN");
    cloudflare.set_header("Content-Type", "application/json");
    cloudflare.set_batch(url = "/zones/ZONE_ID/purge_cache",
        body = {"{"files":[{items}]}"}, max_items = 100, window = 5s);
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        cloudflare.queue_item("https://" + req.http.host + req.url);
        return (purge);
    }
}
