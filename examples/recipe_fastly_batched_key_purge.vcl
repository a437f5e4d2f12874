vcl 4.1;
# Recipe: Fastly batch surrogate-key purge. The keys of every PURGE with an `xkey-purge`
# header (separated by spaces or commas) go to Fastly's API in batches: one
# POST /service/<id>/purge {"surrogate_keys":[...]} per 256 keys, or per 2 seconds after
# the first key of a batch was queued, whichever comes first. Each key is escaped as a JSON
# string by the module. Fastly also takes the keys in a header; that form is
#     fastly.set_batch(url = "/service/SERVICE_ID/purge",
#         header = "Surrogate-Key: {items}", items = tokens, max_items = 256, window = 2s);
# (a key with a space or a control character is then refused, not split).
#
# Replace SERVICE_ID and YOUR_API_TOKEN.

import peer;

backend default none;

acl purgers { "127.0.0.1"; "::1"; }

sub vcl_init {
    new fastly = peer.peer(copy_headers = false, queue_size = 100000, max_attempts = 8,
        max_age = 10m);
    fastly.add_destination("https://api.fastly.com");
    fastly.set_header("Fastly-Key", "YOUR_API_TOKEN");
    fastly.set_header("Content-Type", "application/json");
    fastly.set_header("Accept", "application/json");
    fastly.set_batch(url = "/service/SERVICE_ID/purge",
        body = {"{"surrogate_keys":[{items}]}"}, max_items = 256, window = 2s);
}

sub vcl_recv {
    if (req.method == "PURGE" && req.http.xkey-purge) {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        fastly.queue_items(req.http.xkey-purge);
        return (synth(202, "Queued"));
    }
    return (synth(404));
}
