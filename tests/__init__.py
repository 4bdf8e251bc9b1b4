"""
tcpmux's tests; run them with C{trial tests}.
"""
