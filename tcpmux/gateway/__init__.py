# -*- test-case-name: tests.test_gateway -*-
"""
Gateways: what tcpmux does to requests of one application protocol on
their way to the target, beyond carrying them (a Modbus unit id map,
read-only rules, retries, a cache). Each is an
L{tcpmux.interfaces.IDispatcher} that wraps the queues, or an
L{tcpmux.interfaces.ITarget} that wraps a target; the core knows neither.
"""
