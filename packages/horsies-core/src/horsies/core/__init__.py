"""Compatibility face for the deep imports shown in the documentation, so code written from
the docs against the original API runs unchanged.

The modules below `horsies.core` only re-export names; the real code lives in `horsies.config`,
`horsies.errors`, `horsies.tasks`, `horsies.broker` and `horsies.codec`. New code should import from
`horsies` directly.
"""
