package coordinator

import _ "embed"

// openAPIDoc is the admin API's OpenAPI 3 document, served at
// /v1/openapi.json. TestOpenAPICoversRoutes checks it names every route.
//
//go:embed openapi/openapi.json
var openAPIDoc []byte
