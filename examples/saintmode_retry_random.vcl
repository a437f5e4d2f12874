vcl 4.1;
# Saintmode with retries across a random director: an origin that answers 5xx for an
# object is avoided for that object for 20 s, and the retry picks the other origin.
# Past 10 blacklisted objects an origin is considered sick for everything.
#
# Addresses: origins 127.0.0.1:8080 and 127.0.0.1:8081.

import saintmode;
import directors;

backend origin1 { .host = "127.0.0.1"; .port = "8080"; }
backend origin2 { .host = "127.0.0.1"; .port = "8081"; }

sub vcl_init {
    new sm1 = saintmode.saintmode(origin1, 10);
    new sm2 = saintmode.saintmode(origin2, 10);
    new origins = directors.random();
    origins.add_backend(sm1.backend(), 1);
    origins.add_backend(sm2.backend(), 1);
}

sub vcl_recv {
    if (req.url == "/saintmode") {
        return (synth(200));
    }
}

sub vcl_synth {
    if (req.url == "/saintmode") {
        set resp.http.Content-Type = "application/json";
        set resp.body = saintmode.status();
        return (deliver);
    }
}

sub vcl_backend_fetch {
    set bereq.backend = origins.backend();
}

sub vcl_backend_response {
    if (beresp.status >= 500 && bereq.retries < 2) {
        saintmode.blacklist(20s);
        return (retry);
    }
}

sub vcl_backend_error {
    # Connection failures too.
    if (bereq.retries < 2) {
        saintmode.blacklist(20s);
        return (retry);
    }
}
