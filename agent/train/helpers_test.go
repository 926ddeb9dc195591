package train

// withOpts returns a copy of o changed by f.
func withOpts(o Options, f func(*Options)) Options {
	f(&o)
	return o
}
