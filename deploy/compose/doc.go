// Package compose is the Cohort compose testbed: docker-compose.yml in this
// directory runs three coordinators and three site agents from the local
// images of deploy/build-image.sh (see README.md; up.sh and down.sh bring it
// up and down).
//
// The package holds no code, only the testbed's end-to-end test
// (compose_test.go), which test.sh runs: it brings the testbed up with the
// same compose file, runs training jobs through the admin API, kills the
// leader in the middle of a round, cuts one agent off the network, and tears
// everything down.
package compose
