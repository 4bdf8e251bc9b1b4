# -*- test-case-name: tests.test_target -*-
"""
The target side: connections to the target and the round trips they carry.

  - L{factory.TargetClientFactory}: keeps one connection open, reconnecting
    with back-off, and offers L{tcpmux.interfaces.ITarget.roundTrip};
  - L{connector.EndpointConnector}: lets that factory drive any client
    endpoint (TCP, TLS, UNIX, an endpoint string);
  - L{session.TargetSession}: one connection, one round trip at a time;
  - L{pipeline.PipelinedTargetSession}: one connection, several round trips
    at once, matched by the ids their responses carry (C{--pipeline});
  - L{pool.TargetPool}: several connections behind one
    L{tcpmux.interfaces.ITarget} (C{--connections}).
"""
