"""
The twistd plugin is found, and is only a pointer to L{tcpmux.tap}.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

import tcpmux.tap


class PluginTests(SynchronousTestCase):
    def test_found(self):
        """
        C{twistd tcpmux} finds a service maker named tcpmux whose options
        and makeService are L{tcpmux.tap}'s.
        """
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("tcpmux", makers)
        maker = makers["tcpmux"]
        self.assertIs(maker.options, tcpmux.tap.Options)
        self.assertIs(maker.makeService, tcpmux.tap.makeService)
