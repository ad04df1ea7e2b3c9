/* schema: a JSON value against the subset of JSON Schema the Users document uses (type,
 * properties, required, additionalProperties, items, enum, deprecated, nullable), with every
 * violation reported in the upstream's (NestJS class-validator) words:
 *
 *   missing required member   "X should not be empty", then its type message
 *   required string ""        "X should not be empty"
 *   wrong type                "X must be a string" / "X must be a boolean value" /
 *                             "X must be a number conforming to the specified constraints" /
 *                             "X must be an integer number" / "X must be an array" /
 *                             "X must be an object"   (null counts as a wrong type unless the
 *                             schema says nullable)
 *   enum                      "X must be one of the following values: a, b"
 *   array items               "each value in X must be a string",
 *                             "each value in X must be one of the following values: a, b"
 *   unknown member            "property X should not exist"
 *   deprecated member sent    "property X should not exist"
 *
 * Nested members are named with dots ("permissions.paymentsEnabled"); map values allowed by
 * additionalProperties too ("twilioPhone.<key>"). Messages come in the schema's property order,
 * then unknown members in the order sent. An object schema without "properties" and without
 * "additionalProperties" accepts any members. "format" is not used by the document and is not
 * checked; "default" is not applied (the gateway never rewrites a request; the policy stage
 * reads defaults with gw_schema_default).
 *
 * Memory: messages are appended to the caller's gw_msgs. Threads: any (schemas are immutable).
 */
#ifndef GW_SCHEMA_H
#define GW_SCHEMA_H

#include <cJSON.h>

#include "msgs.h"

/* Appends one message per violation of value against schema; returns how many. */
size_t gw_schema_check(const cJSON *schema, const cJSON *value, struct gw_msgs *out);

/* The documented default of a property of an object schema, or NULL. */
const cJSON *gw_schema_default(const cJSON *object_schema, const char *property);

#endif
