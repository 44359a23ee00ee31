"""Compatibility path `horsies.core.codec.serde` (see `horsies.core`): the JSON codec helpers."""

# Each name is re-exported explicitly (`import X as X`), so type checkers see it here too.
# ruff: noqa: PLC0414
from horsies.codec import SerializationError as SerializationError
from horsies.codec import args_from_json as args_from_json
from horsies.codec import args_to_json as args_to_json
from horsies.codec import dumps_json as dumps_json
from horsies.codec import kwargs_from_json as kwargs_from_json
from horsies.codec import kwargs_to_json as kwargs_to_json
from horsies.codec import loads_json as loads_json
from horsies.codec import rehydrate_value as rehydrate_value
from horsies.codec import task_result_from_json as task_result_from_json
from horsies.codec import task_result_to_json as task_result_to_json
from horsies.codec import to_jsonable as to_jsonable
