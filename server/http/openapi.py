"""GET /openapi.json: the HTTP API as an OpenAPI 3.1 document.

The machine-readable twin of docs/protocol.md: every route app.py serves, its body,
its answers and its errors, as the code really gives them. Where the two disagree
the prose is the contract and this is the bug. tests/test_openapi.py keeps it true:
every route of the app is here (and nothing else is), and schemathesis, run against
a live server with this document, finds no 5xx and no response this contradicts.

Plain data, built from the settings (limits in descriptions and schemas). JSON
Schema 2020-12 cannot say everything the code checks (a body's size in bytes, the
letters of a character name); those rules are stated in the descriptions, and a
schema here is never stricter than the code.
"""

from __future__ import annotations

from auth.accounts import PASSWORD_MAX, PASSWORD_MIN
from characters.service import CLASSES, NAME_MAX, NAME_MIN
from persistence.users import EMAIL, EMAIL_MAX, USERNAME
from server.config import Settings

Json = dict[str, object]

PROTOCOL = "docs/protocol.md"
# What GET /metrics answers (the Prometheus text exposition format).
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> Json:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _error(description: str, *codes: str, headers: Json | None = None) -> Json:
    """An error response in the docs/protocol.md shape whose code is one of `codes`."""
    response: Json = {
        "description": description,
        "content": _json({"allOf": [
            _ref("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]}),
    }
    if headers:
        response["headers"] = headers
    return response


def _uuid() -> Json:
    return {"type": "string", "format": "uuid"}


def _time() -> Json:
    return {"type": "string", "format": "date-time", "pattern": "Z$",
            "description": "ISO-8601 UTC, ending in Z"}


def _schemas(settings: Settings) -> Json:
    error_body: Json = {
        "type": "object",
        "required": ["code", "message"],
        "additionalProperties": False,
        "properties": {
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                     "description": "snake_case; see the list in docs/protocol.md"},
            "message": {"type": "string", "minLength": 1, "description": "human text"},
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "string", "minLength": 1},
                "description": "validation errors and 409s only: each rejected field and "
                               'why ("required", "must be a string", "taken", a rule)',
            },
        },
    }
    checks: Json = {
        "type": "object",
        "required": ["postgres", "redis", "nats"],
        "additionalProperties": False,
        "properties": {name: {"type": "boolean"} for name in ("postgres", "redis", "nats")},
    }
    character_name: Json = {
        "type": "string", "minLength": NAME_MIN, "maxLength": NAME_MAX,
        "description": "letters of any script, digits, space, _ and - (combining marks "
                       "after a letter too); not blank; unique per user regardless of case",
    }
    schemas: Json = {
        "ErrorBody": error_body,
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": _ref("ErrorBody")},
            "description": "the body of every non-2xx response (GET /readyz's 503 adds "
                           "`checks`: NotReady)",
        },
        "Registration": {
            "type": "object",
            "required": ["username", "email", "password"],
            "properties": {
                # The very patterns registration checks (persistence/users.py).
                "username": {"type": "string", "pattern": f"^{USERNAME.pattern}$",
                             "description": "unique case-insensitively"},
                "email": {
                    "type": "string", "maxLength": EMAIL_MAX,
                    "pattern": f"^{EMAIL.pattern}$",
                    "description": "a plausible address, unique case-insensitively, "
                                   "stored lower-cased",
                },
                "password": {"type": "string", "minLength": PASSWORD_MIN,
                             "maxLength": PASSWORD_MAX},
            },
            "example": {"username": "ada_99", "email": "ada@example.com",
                        "password": "correct horse"},
        },
        "Credentials": {
            "type": "object",
            "required": ["username", "password"],
            "properties": {
                "username": {"type": "string", "description": "the username or the email"},
                "password": {"type": "string"},
            },
            "example": {"username": "ada_99", "password": "correct horse"},
        },
        "Session": {
            "type": "object",
            "required": ["user_id", "token", "refresh_token", "expires_in"],
            "additionalProperties": False,
            "properties": {
                "user_id": _uuid(),
                "token": {"type": "string", "minLength": 1,
                          "description": f"an access token, a JWT (HS256), valid for "
                                         f"{settings.jwt_ttl_s} s; send it as "
                                         "Authorization: Bearer <token>"},
                "refresh_token": {"type": "string", "minLength": 43,
                                  "description": "opaque; POST /v1/auth/refresh takes it "
                                                 "(once) for new tokens, within "
                                                 f"{settings.refresh_ttl_s} s of the login"},
                "expires_in": {"type": "integer", "const": settings.jwt_ttl_s,
                               "description": "the access token's life, in seconds"},
            },
        },
        "RefreshToken": {
            "type": "object",
            "required": ["refresh_token"],
            "properties": {"refresh_token": {"type": "string"}},
        },
        "Logout": {
            "type": "object",
            "properties": {"refresh_token": {
                "type": "string", "description": "its session ends too (or alone, with no "
                                                 "Authorization)"}},
        },
        "NewCharacter": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": character_name,
                "class": {"enum": [*CLASSES, "", None],
                          "description": f'empty, null or missing means "{CLASSES[0]}"'},
            },
            "example": {"name": "Slick Sam", "class": "scout"},
        },
        "Character": {
            "type": "object",
            "required": ["id", "user_id", "name", "class", "zone_id", "x", "y", "active",
                         "created_at"],
            "additionalProperties": False,
            "properties": {
                "id": _uuid(),
                "user_id": _uuid(),
                "name": character_name,
                "class": {"enum": list(CLASSES)},
                "zone_id": {"type": "string", "minLength": 1},
                "x": {"type": "number"},
                "y": {"type": "number"},
                "active": {"type": "boolean"},
                "created_at": _time(),
            },
        },
        "CharacterList": {
            "type": "object",
            "required": ["characters"],
            "additionalProperties": False,
            "properties": {"characters": {"type": "array", "items": _ref("Character"),
                                          "description": "oldest first"}},
        },
        "Me": {
            "type": "object",
            "required": ["user_id", "username", "email", "player", "progression", "buildings",
                         "active_character_id"],
            "additionalProperties": False,
            "description": "null or empty parts are not provisioned yet",
            "properties": {
                "user_id": _uuid(),
                "username": {"type": "string"},
                "email": {"type": "string"},
                "player": {"oneOf": [{"type": "null"}, {
                    "type": "object",
                    "required": ["user_id", "username", "created_at", "kills", "deaths"],
                    "additionalProperties": False,
                    "properties": {"user_id": _uuid(), "username": {"type": "string"},
                                   "created_at": _time(),
                                   "kills": {"type": "integer", "minimum": 0},
                                   "deaths": {"type": "integer", "minimum": 0}},
                }]},
                "progression": {"oneOf": [{"type": "null"}, {
                    "type": "object",
                    "required": ["level", "xp", "weapons", "skills"],
                    "additionalProperties": False,
                    "properties": {
                        "level": {"type": "integer", "minimum": 1},
                        "xp": {"type": "integer", "minimum": 0},
                        "weapons": {"type": "array", "items": {"type": "string"}},
                        "skills": {"type": "array", "items": {"type": "string"}},
                    },
                }]},
                "buildings": {"type": "array", "items": {
                    "type": "object",
                    "required": ["kind", "level"],
                    "additionalProperties": False,
                    "properties": {"kind": {"type": "string"},
                                   "level": {"type": "integer", "minimum": 1}},
                }, "description": "in the order they were granted"},
                "active_character_id": {"oneOf": [{"type": "null"}, _uuid()]},
            },
        },
        "Zone": {
            "type": "object",
            "required": ["zone", "up", "players"],
            "additionalProperties": False,
            "description": "a zone that is down has only zone, up (false) and players (0)",
            "properties": {
                "zone": {"type": "string", "minLength": 1},
                "up": {"type": "boolean"},
                "players": {"type": "integer", "minimum": 0},
                "tick": {"type": "integer", "minimum": 0},
                "tick_rate": {"type": "number", "exclusiveMinimum": 0},
                "owner": {"type": "string",
                          "description": "the process running it, for zones of other "
                                         "processes"},
                "tick_ms": {
                    "type": "object",
                    "required": ["p50", "p99", "max"],
                    "additionalProperties": False,
                    "description": "recent tick durations; null before the first tick",
                    "properties": {q: {"type": ["number", "null"], "minimum": 0}
                                   for q in ("p50", "p99", "max")},
                },
            },
        },
        "ZoneReportList": {
            "type": "object",
            "required": ["zones"],
            "additionalProperties": False,
            "properties": {"zones": {"type": "array", "items": _ref("ZoneReport")}},
        },
        "Roster": {
            "type": "object",
            "required": ["zone", "total", "players"],
            "additionalProperties": False,
            "properties": {
                "zone": {"type": "string"},
                "total": {"type": "integer", "minimum": 0,
                          "description": "players in the zone; the first 1000 are listed"},
                "players": {"type": "array", "items": {
                    "type": "object",
                    "required": ["character_id", "user_id", "name", "x", "y", "fields"],
                    "additionalProperties": False,
                    "properties": {
                        "character_id": _uuid(), "user_id": _uuid(),
                        "name": {"type": "string"}, "x": {"type": "number"},
                        "y": {"type": "number"},
                        "fields": {"type": "object",
                                   "description": "the game's replicated fields (hp...)"}},
                }},
            },
        },
        "Kicked": {
            "type": "object",
            "required": ["kicked"],
            "additionalProperties": False,
            "properties": {"kicked": _uuid()},
        },
        "Destination": {
            "type": "object",
            "required": ["zone"],
            "properties": {"zone": {"type": "string", "minLength": 1,
                                    "description": "a zone that runs now"}},
            "example": {"zone": "z1"},
        },
        "Account": {
            "type": "object",
            "required": ["user_id", "username", "email", "operator", "disabled",
                         "characters", "player", "progression", "buildings",
                         "active_character_id"],
            "additionalProperties": False,
            "description": "the account (its provisioned parts as GET /v1/me has them), "
                           "its role and state, and its characters",
            "properties": {
                "user_id": _uuid(),
                "username": {"type": "string"},
                "email": {"type": "string"},
                "operator": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "characters": {"type": "array", "items": _ref("AccountCharacter")},
                **{part: {"$ref": f"#/components/schemas/Me/properties/{part}"}
                   for part in ("player", "progression", "buildings", "active_character_id")},
            },
        },
        "ZoneList": {
            "type": "object",
            "required": ["zones"],
            "additionalProperties": False,
            "properties": {"zones": {"type": "array", "items": _ref("Zone")}},
        },
        "WorldMap": {
            "type": "object",
            "required": ["bounds", "view_radius", "walls", "spawns"],
            "additionalProperties": False,
            "properties": {
                "bounds": {"type": "array", "items": {"type": "number"}, "minItems": 4,
                           "maxItems": 4, "description": "min_x, min_y, max_x, max_y"},
                "view_radius": {"type": "number", "minimum": 0,
                                "description": "how far a player sees; 0: the whole zone"},
                "walls": {"type": "array", "items": {
                    "type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                    "description": "min_x, min_y, max_x, max_y"}},
                "spawns": {"type": "array", "minItems": 1, "items": {
                    "type": "array", "items": {"type": "number"}, "minItems": 2,
                    "maxItems": 2}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"const": "ok"}},
        },
        "Checks": checks,
        "Ready": {
            "type": "object",
            "required": ["status", "checks"],
            "additionalProperties": False,
            "properties": {
                "status": {"const": "ready"},
                "checks": {"allOf": [_ref("Checks"), {
                    "properties": {name: {"const": True}
                                   for name in ("postgres", "redis", "nats")}}]},
            },
        },
        "NotReady": {
            "type": "object",
            "required": ["error", "checks"],
            "additionalProperties": False,
            "properties": {
                "error": {"allOf": [_ref("ErrorBody"),
                                    {"properties": {"code": {"const": "unavailable"}}}]},
                "checks": _ref("Checks"),
            },
        },
    }
    # What the console shows beside what players see: the same objects, and more.
    schemas["ZoneReport"] = _extended(schemas["Zone"], "a zone as the console sees it (a "
                                      "running zone always has owner)", snapshots_per_s={
        "type": ["number", "null"], "minimum": 0,
        "description": "ticks the zone ran a second between its last two reports to the zone "
                       "directory (each sends every player a snapshot); null until two are "
                       "heard"})
    schemas["AccountCharacter"] = _extended(schemas["Character"], "a character, and whether "
                                            "its zone runs", required=True, zone_up={
        "type": "boolean", "description": "false: stranded in a zone that does not run (move "
                                          "it to one that does)"})
    return schemas


def _extended(schema: object, description: str, *, required: bool = False,
              **properties: Json) -> Json:
    """`schema` (an object that allows no other property) with `properties` besides."""
    assert isinstance(schema, dict)
    extended: Json = {**schema, "description": description,
                      "properties": {**schema["properties"], **properties}}
    if required:
        extended["required"] = [*schema["required"], *properties]
    return extended


def _responses(settings: Settings) -> Json:
    limit = settings.max_body_bytes
    return {
        "BadRequest": _error(
            "validation_failed (a field is missing or breaks a rule: `fields` says which "
            "and why) or bad_json (the body is not JSON, or not an object)",
            "validation_failed", "bad_json"),
        "Unauthenticated": _error(
            "unauthenticated: the Bearer token is missing, malformed, expired or forged",
            "unauthenticated"),
        "InvalidCredentials": _error(
            "invalid_credentials: the same answer for an unknown user and a wrong password",
            "invalid_credentials"),
        "NotFound": _error("not_found", "not_found"),
        "NotOperator": _error("forbidden: the token is valid, but not an operator's (`outpost "
                              "operator grant <username>` makes one)", "forbidden"),
        "MethodNotAllowed": _error(
            "method_not_allowed: a known path with a method it does not serve",
            "method_not_allowed"),
        "TooLarge": _error(f"too_large: the body is over MAX_BODY_BYTES ({limit} bytes)",
                           "too_large"),
        "UnsupportedMediaType": _error(
            "unsupported_media_type: the body must be sent as application/json",
            "unsupported_media_type"),
        "LoginRateLimited": _rate_limited(
            f"too many login attempts from this address ({settings.login_rate_per_address}), "
            f"or failed ones for this account from this address "
            f"({settings.login_failures_per_account_and_address}) or from all "
            f"({settings.login_failures_per_account}), "
            f"within {settings.login_rate_window_s:g} s"),
        "RegisterRateLimited": _rate_limited(
            f"too many registrations from this address ({settings.register_rate_per_address})"
            f" or in all ({settings.register_rate_total}) within "
            f"{settings.register_rate_window_s:g} s"),
        "Unavailable": _error(
            "unavailable: a backing service is down; the request changed nothing",
            "unavailable"),
    }


def _rate_limited(why: str) -> Json:
    return _error(f"rate_limited: {why}", "rate_limited", headers={"Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }})


def _body(schema: str) -> Json:
    return {"required": True, "content": _json(_ref(schema)),
            "description": "a JSON object sent as application/json"}


def _ok(description: str, schema: str) -> Json:
    return {"description": description, "content": _json(_ref(schema))}


# The errors every route that reads a JSON body can answer.
_BODY_ERRORS = {"400": _response("BadRequest"), "413": _response("TooLarge"),
                "415": _response("UnsupportedMediaType")}
_BEARER: list[Json] = [{"bearer": []}]


def _register(operation_id: str, alias: bool) -> Json:
    return {
        "operationId": operation_id,
        "tags": ["auth"],
        "summary": "Register an account" + (" (an alias of /v1/auth/register)" if alias else ""),
        "description": "Publishes `user.registered` exactly once per user; provisioning "
                       "(GET /v1/me) follows asynchronously.",
        "requestBody": _body("Registration"),
        "responses": {
            "201": _ok("the account, and a token for it", "Session"),
            **_BODY_ERRORS,
            "409": _error("conflict: the username or email is taken (`fields` names it)",
                          "conflict"),
            "429": _response("RegisterRateLimited"),
            "503": _response("Unavailable"),
        },
    }


def _login(operation_id: str, alias: bool) -> Json:
    return {
        "operationId": operation_id,
        "tags": ["auth"],
        "summary": "Log in" + (" (an alias of /v1/auth/login)" if alias else ""),
        "requestBody": _body("Credentials"),
        "responses": {
            "200": _ok("a fresh token", "Session"),
            **_BODY_ERRORS,
            "401": _response("InvalidCredentials"),
            "403": _error("forbidden: the password is right, but an operator disabled the "
                          "account", "forbidden"),
            "429": _response("LoginRateLimited"),
            "503": _response("Unavailable"),
        },
    }


def _auth_paths() -> Json:
    ended = _error("unauthenticated: the refresh token is unknown, or its session ended "
                   "(a logout, a disable, its life, or this very token used a second time: "
                   "which ends the session)", "unauthenticated")
    return {
        "/v1/auth/refresh": {"post": {
            "operationId": "refresh", "tags": ["auth"],
            "summary": "New tokens for a refresh token, which is used up",
            "requestBody": _body("RefreshToken"),
            "responses": {"200": _ok("a new access token and the next refresh token",
                                     "Session"),
                          **_BODY_ERRORS, "401": ended, "503": _response("Unavailable")},
        }},
        "/v1/auth/logout": {"post": {
            "operationId": "logout", "tags": ["auth"],
            "summary": "End the session of the access token (and of the body's refresh "
                       "token, if any)",
            "description": "Its tokens stop working and its world sockets close (4012) in "
                           "every api process.",
            "security": [*_BEARER, {}],
            "requestBody": {"required": False, "content": _json(_ref("Logout")),
                            "description": "optional: a JSON object sent as "
                                           "application/json"},
            "responses": {"204": {"description": "the session has ended"},
                          **_BODY_ERRORS,
                          "401": _error("unauthenticated: no valid access token, and no "
                                        "known refresh token", "unauthenticated"),
                          "503": _response("Unavailable")},
        }},
    }


def _admin(operation_id: str, summary: str, ok: Json, *, description: str = "",
           parameters: tuple[str, ...] = (), body: str | None = None,
           errors: Json | None = None) -> Json:
    """A console route: an operator's token, or 401/403 before anything else is read."""
    operation: Json = {
        "operationId": operation_id, "tags": ["console"], "summary": summary,
        "security": _BEARER,
        "parameters": [{"name": name, "in": "path", "required": True,
                        "schema": {"type": "string"}, "description": _ADMIN_PARAMETERS[name]}
                       for name in parameters],
        "responses": {"200": ok, "401": _response("Unauthenticated"),
                      "403": _response("NotOperator"), "503": _response("Unavailable")},
    }
    responses = operation["responses"]
    assert isinstance(responses, dict)
    responses.update(errors or {})
    if description:
        operation["description"] = description
    if body:
        operation["requestBody"] = _body(body)
        responses.update(_BODY_ERRORS)
    return operation


_ADMIN_PARAMETERS = {
    "zone_id": "a zone's id, e.g. z1",
    "character_id": "a character's id (a uuid)",
    "who": "a user's id, username (any case) or email",
}
_NO_CHARACTER: Json = {"404": _error("not_found: no such character", "not_found")}
_NO_ACCOUNT: Json = {"404": _error("not_found: no such account", "not_found")}
_ZONE_DOWN = _error("zone_unavailable: the zone stopped, or did not answer within 2 s",
                    "zone_unavailable")


def _admin_paths() -> Json:
    return {
        "/v1/admin/zones": {"get": _admin(
            "adminZones", "Every zone, up or down, with its owner process and figures",
            _ok("the zones", "ZoneReportList"))},
        "/v1/admin/zones/{zone_id}/players": {"get": _admin(
            "adminZonePlayers", "Who plays in a zone now, wherever it runs",
            _ok("the zone's players", "Roster"), parameters=("zone_id",),
            errors={"404": _error("not_found: the zone does not run", "not_found"),
                    "503": _ZONE_DOWN})},
        "/v1/admin/characters/{character_id}/kick": {"post": _admin(
            "adminKick", "Close the sessions playing a character (4010)",
            _ok("told to every api process", "Kicked"), parameters=("character_id",),
            description="Every api process closes the world sessions playing it with 4010; "
                        "its zone saves its position as it leaves. No body.",
            errors=_NO_CHARACTER)},
        "/v1/admin/characters/{character_id}/move": {"post": _admin(
            "adminMove", "Move a character to a running zone's spawn point",
            _ok("the character, where it is now", "Character"), parameters=("character_id",),
            body="Destination",
            description="The rescue of a character saved in a zone that no longer runs: its "
                        "next join takes it to `zone`. A session playing it is closed (4010).",
            errors={"404": _NO_CHARACTER["404"], "503": _ZONE_DOWN,
                    "409": _error("conflict: the zone does not run (fields.zone = not "
                                  "running)", "conflict")})},
        "/v1/admin/users/{who}": {"get": _admin(
            "adminAccount", "An account: its role, its state and its characters",
            _ok("the account", "Account"), parameters=("who",), errors=_NO_ACCOUNT)},
        "/v1/admin/users/{who}/disable": {"post": _admin(
            "adminDisable", "Disable an account",
            _ok("the account, disabled", "Account"), parameters=("who",),
            description="Its world sessions close (4011) and its tokens stop working at once "
                        "in every api process (within 5 s when NATS is away); its logins are "
                        "refused (403). An operator cannot disable their own. No body.",
            errors={"404": _NO_ACCOUNT["404"],
                    "400": _error("validation_failed: your own account", "validation_failed")})},
        "/v1/admin/users/{who}/enable": {"post": _admin(
            "adminEnable", "Enable a disabled account again",
            _ok("the account, enabled", "Account"), parameters=("who",), errors=_NO_ACCOUNT)},
    }


def _paths(settings: Settings) -> Json:
    return {
        **_admin_paths(),
        "/v1/auth/register": {"post": _register("register", alias=False)},
        "/api/auth/register": {"post": _register("registerAlias", alias=True)},
        "/v1/auth/login": {"post": _login("login", alias=False)},
        "/api/auth/login": {"post": _login("loginAlias", alias=True)},
        **_auth_paths(),
        "/v1/characters": {
            "post": {
                "operationId": "createCharacter",
                "tags": ["characters"],
                "summary": "Create a character",
                "description": f"It starts at (0, 0) in {settings.world_zone_id}, inactive. A "
                               f"user has at most {settings.max_characters_per_user} "
                               "(409, fields.name = limit_reached). Publishes "
                               "`character.created`.",
                "security": _BEARER,
                "requestBody": _body("NewCharacter"),
                "responses": {
                    "201": _ok("the new character", "Character"),
                    **_BODY_ERRORS,
                    "401": _response("Unauthenticated"),
                    "409": _error("conflict: fields.name is taken (a character of yours has "
                                  "this name, in any case) or limit_reached", "conflict"),
                    "503": _response("Unavailable"),
                },
            },
            "get": {
                "operationId": "listCharacters",
                "tags": ["characters"],
                "summary": "The user's characters, oldest first",
                "security": _BEARER,
                "responses": {
                    "200": _ok("never older than the client's own last successful write",
                               "CharacterList"),
                    "401": _response("Unauthenticated"),
                    "503": _response("Unavailable"),
                },
            },
        },
        "/v1/me": {
            "get": {
                "operationId": "me",
                "tags": ["account"],
                "summary": "The account and what provisioning has made of it so far",
                "security": _BEARER,
                "responses": {
                    "200": _ok("the account", "Me"),
                    "401": _response("Unauthenticated"),
                    "404": _error("not_found: the token's account does not exist", "not_found"),
                    "503": _response("Unavailable"),
                },
            },
        },
        "/v1/world/zones": {
            "get": {
                "operationId": "worldZones",
                "tags": ["world"],
                "summary": "Every zone of the world, up or down, with its recent stats",
                "responses": {"200": _ok("the zones", "ZoneList")},
            },
        },
        "/v1/world/map": {
            "get": {
                "operationId": "worldMap",
                "tags": ["world"],
                "summary": "What a client draws: the bounds, the view radius, walls and spawns",
                "responses": {"200": _ok("the map", "WorldMap")},
            },
        },
        "/v1/world/ws": {
            "get": {
                "operationId": "worldSocket",
                "tags": ["world"],
                "summary": "The world: a WebSocket upgrade (docs/protocol.md, World)",
                "description": (
                    "Only a WebSocket upgrade (version 13), as the first request of its TCP "
                    "connection, is served: 101, then the messages of docs/protocol.md "
                    "(v1 JSON text frames, or MessagePack with the subprotocol outpost.v2; "
                    "permessage-deflate on offer). The token goes in the Authorization "
                    "header or, for browsers, in ?token=. A plain HTTP request here, or an "
                    "upgrade on a kept-alive connection, is 400 validation_failed. A refused "
                    "upgrade is answered in the error shape and the connection is closed."),
                "security": [{"bearer": []}, {"queryToken": []}],
                "responses": {
                    "101": {"description": "Switching Protocols: the WebSocket is open"},
                    "400": _error("validation_failed: not a WebSocket (version 13) upgrade, "
                                  "or one on a kept-alive HTTP connection",
                                  "validation_failed"),
                    "401": _response("Unauthenticated"),
                    "403": _error("forbidden: an Origin not in WORLD_ALLOWED_ORIGINS",
                                  "forbidden"),
                },
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness: 200 while the process runs",
                "responses": {"200": _ok("the process runs", "Health")},
            },
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: Postgres, Redis and NATS each answer within 2 s",
                "responses": {
                    "200": _ok("all three answer", "Ready"),
                    "503": {"description": "unavailable: at least one does not (checks "
                                           "says which)",
                            "content": _json(_ref("NotReady"))},
                },
            },
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "The process's metrics in the Prometheus text format",
                "responses": {"200": {"description": "Prometheus text exposition format 0.0.4",
                                      "content": {PROMETHEUS_TEXT: {
                                          "schema": {"type": "string"}}}}},
            },
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": _json({"type": "object",
                                                        "required": ["openapi"]})}},
            },
        },
        "/console": {
            "get": {
                "operationId": "console",
                "tags": ["client"],
                "summary": "The operator console (docs/operations.md); its data needs an "
                           "operator's token",
                "responses": {"200": {"description": "the page",
                                      "content": {"text/html": {"schema": {"type": "string"}}}}},
            },
        },
        "/": {
            "get": {
                "operationId": "browserClient",
                "tags": ["client"],
                "summary": "The browser client (docs/client.md)",
                "responses": {"200": {"description": "the page",
                                      "content": {"text/html": {"schema": {"type": "string"}}}}},
            },
        },
        "/static/{filename}": {
            "get": {
                "operationId": "staticFile",
                "tags": ["client"],
                "summary": "The browser client's files (scripts, styles)",
                "parameters": [{"name": "filename", "in": "path", "required": True,
                                "schema": {"type": "string"}, "example": "outpost-client.js",
                                "description": "a file under server/http/static"}],
                "responses": {
                    "200": {"description": "the file, with its own content type",
                            "content": {"*/*": {"schema": {}}}},
                    "404": _response("NotFound"),
                },
            },
        },
    }


def document(settings: Settings) -> Json:
    """The OpenAPI 3.1 document of the HTTP API, with this process's limits."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Outpost HTTP API",
            "version": "1",
            "description": (
                f"The wire contract is {PROTOCOL}; this is its machine-readable twin "
                "(server/http/openapi.py). All bodies are UTF-8 JSON; a request body "
                "must be a JSON object sent as application/json, at most "
                f"{settings.max_body_bytes} bytes. Every non-2xx response has the body "
                '{"error": {"code", "message", "fields"?}}. Any known path answers another '
                "method with 405 method_not_allowed (components/responses/MethodNotAllowed), "
                "an unknown path 404 not_found, and a bug 500 internal (never for bad input). "
                "The WebSocket world and the NATS events are described in the prose only."),
        },
        "tags": [{"name": name} for name in
                 ("auth", "characters", "account", "world", "console", "operations", "client")],
        "paths": _paths(settings),
        "components": {
            "schemas": _schemas(settings),
            "responses": _responses(settings),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "Authorization: Bearer <token of register or "
                                          "login>"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                               "description": "the same token, for browsers opening the "
                                              "WebSocket"},
            },
        },
    }
