"""Compatibility face for the deep imports shown in the documentation (decision D43).

The modules below `horsies.core` only re-export names; the real code lives in `horsies.config`,
`horsies.errors`, `horsies.tasks`, `horsies.broker` and `horsies.codec`. New code should import from
`horsies` directly.
"""
