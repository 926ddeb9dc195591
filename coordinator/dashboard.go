package coordinator

import (
	"net/http"

	"github.com/cohort-fl/cohort/coordinator/web"
)

// mountDashboard serves the dashboard (coordinator/web) on the admin
// listener, at /ui/. Its static files need no token; the page sends the
// token to /v1 only.
func (n *Node) mountDashboard(mux *http.ServeMux) { web.Mount(mux) }
