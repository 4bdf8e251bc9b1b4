# -*- test-case-name: tests.test_multiplexer -*-
"""
The client side: the clients of one listener and their requests.

  - L{session.ClientSession}: one client; receives its whole requests from
    its framer, keeps them in order, and writes each answer back;
  - L{queue.RoundTripQueue}: carries requests to the target, as many at a
    time as it carries, each with one deadline;
  - L{registry.ClientRegistry}: who is connected, C{--max-clients},
    C{--idle-close}, and closing everyone when tcpmux stops.
"""
