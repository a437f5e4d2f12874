vcl 4.1;
# Stale-if-sick: an expired object is refreshed synchronously while its origin is
# healthy for it; once the origin is blacklisted for that object (it failed to refresh
# it), the graced copy is delivered at once instead of waiting for a failing origin.
# This is what the "vcl_lookup" proposal for Varnish asked for, decided per object
# with sm.is_healthy() in vcl_hit.
#
# Address: origin 127.0.0.1:8080.

import saintmode;

backend origin { .host = "127.0.0.1"; .port = "8080"; }

sub vcl_init {
    new sm = saintmode.saintmode(origin, 100);
}

sub vcl_recv {
    if (req.http.X-Refresh) {
        # Origin healthy for this object: refresh now, no stale content.
        set req.grace = 0s;
    } else {
        set req.grace = 1h;
    }
}

sub vcl_backend_fetch {
    set bereq.backend = sm.backend();
}

sub vcl_backend_response {
    set beresp.grace = 1h;
    if (beresp.status >= 500) {
        # Sick for this object for 30 s; keep the cached copy.
        saintmode.blacklist(30s);
        return (abandon);
    }
}

sub vcl_hit {
    if (obj.ttl <= 0s && obj.ttl + obj.grace > 0s) {
        if (sm.is_healthy()) {
            if (req.restarts == 0) {
                set req.http.X-Refresh = "1";
                return (restart);
            }
        } else {
            # Known sick for this object: the graced copy, now.
            set req.http.X-Stale-If-Sick = "1";
            return (deliver);
        }
    }
}

sub vcl_synth {
    if (resp.status == 503 && req.http.X-Refresh && req.restarts < 2) {
        # The refresh failed and blacklisted the object: serve it from the cache.
        unset req.http.X-Refresh;
        return (restart);
    }
}

sub vcl_deliver {
    if (req.http.X-Stale-If-Sick) {
        set resp.http.X-Stale-If-Sick = "1";
    }
}
