"""Schemathesis hooks for .ci/schemathesis.sh.

The OpenAPI document states what the services refuse in JSON Schema where it
can (gateway/src/openapi/constraints.rs). Two kinds of refusal it cannot:

- Rules across values that JSON Schema has no keyword for, which the
  document states in words: each SKU at most once among an order's (or a
  reservation's, or an availability check's) lines (`uniqueItems` cannot
  say it of lines that differ in quantity), and an account's credit and
  payment limits in the currency of its opening balance. Bodies that break
  them are not sent (filter_case, which every phase applies): they are not
  the document's valid requests.
- Refusals for the state a request meets, not for the request:
  FAILED_PRECONDITION (HTTP 400 in Google's mapping, as the gateway has it),
  e.g. committing a released reservation or cancelling a rejected order.
  No document of requests can rule those out, so a "schema-valid request
  rejected" whose status says FAILED_PRECONDITION is dropped
  (filter_failure); every other refusal of a schema-valid request, and
  INVALID_ARGUMENT above all, still fails the run.
"""

import schemathesis

FAILED_PRECONDITION = 9


@schemathesis.hook
def filter_case(context, case):
    body = case.body
    if not isinstance(body, dict):
        return True
    lines = body.get("lines")
    if isinstance(lines, list):
        skus = [line.get("sku") for line in lines if isinstance(line, dict)]
        if len(skus) != len(set(skus)):
            return False
    opening = body.get("openingBalance")
    if isinstance(opening, dict):
        for limit in (body.get("creditLimit"), body.get("paymentLimit")):
            if isinstance(limit, dict) and limit.get("currencyCode") != opening.get("currencyCode"):
                return False
    return True


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code != "ST202":
        return True
    try:
        status = response.json()
    except Exception:
        return True
    return not (isinstance(status, dict) and status.get("code") == FAILED_PRECONDITION)
