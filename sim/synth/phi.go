package synth

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Building blocks of the synthetic identifying data. Every value is made
// unique by construction: a per-site bijection maps the patient's number to
// a code that becomes a name suffix, an MRN, a phone number and a street
// address, and the site's Index is part of each of them.

const (
	consonants = "bdfgklmnprstvz"
	vowels     = "aeiou"
	// syllables is the number of consonant-vowel syllables.
	syllables = len(consonants) * len(vowels)
	// mrnRange and phoneRange are the sizes of the MRN and phone bijections;
	// their multipliers are coprime with them.
	mrnRange   = 10_000_000
	mrnMul     = 7_654_321
	phoneRange = 8_000_000
	phoneMul   = 1_234_567
	// codeMul is coprime with MaxPatients = 2^3 * 5^3 * 7^3.
	codeMul = 104_729
)

var femaleNames = [...]string{
	"Maria", "Aisha", "Emma", "Olivia", "Sofia", "Mei", "Priya", "Fatima",
	"Grace", "Hannah", "Isabel", "Julia", "Keiko", "Laura", "Nadia", "Chloe",
	"Rosa", "Sarah", "Tamara", "Ursula", "Valentina", "Wanda", "Yara", "Zoe",
	"Amelia", "Beatriz", "Carmen", "Daniela", "Elena", "Freya", "Ingrid", "Leila",
}

var maleNames = [...]string{
	"James", "Mohammed", "Liam", "Noah", "Mateo", "Wei", "Arjun", "Omar",
	"Daniel", "Ethan", "Felix", "Gabriel", "Hiroshi", "Ivan", "Jonas", "Kofi",
	"Lucas", "Marcus", "Nikolai", "Oscar", "Pedro", "Rafael", "Samuel", "Tomas",
	"Victor", "William", "Yusuf", "Andre", "Benjamin", "Carlos", "David", "Emil",
}

var surnames = [...]string{
	"Smith", "Garcia", "Nguyen", "Okafor", "Kowalski", "Patel", "Johansson",
	"Rossi", "Haddad", "Kim", "Schmidt", "Dubois", "Silva", "Ivanova", "Cohen",
	"Tanaka", "Murphy", "Hernandez", "Mensah", "Novak", "Larsen", "Costa",
	"Brown", "Wilson", "Andersen", "Yilmaz", "Rahman", "Moreau", "Fischer",
	"Lopez", "Chen", "Singh", "Walker", "Ortiz", "Jensen", "Bianchi",
	"Achebe", "Petrov", "Sato", "Reyes",
}

var streets = [...]string{
	"Maple Street", "Oak Avenue", "Cedar Lane", "Pine Road", "Elm Street",
	"Birch Drive", "Walnut Court", "Willow Way", "Chestnut Boulevard",
	"Spruce Terrace", "Magnolia Place", "Juniper Street", "Hawthorn Avenue",
	"Sycamore Lane", "Poplar Road", "Aspen Drive", "Laurel Court",
	"Hickory Way", "Linden Street", "Alder Avenue", "Mill Road", "River Lane",
	"Lake Drive", "Hill Street", "Park Avenue", "Church Street",
	"Market Street", "Station Road", "Bridge Street", "Orchard Lane",
	"Meadow Drive", "Harbor View", "Sunset Boulevard", "Highland Avenue",
	"Forest Road", "Garden Street", "Prospect Avenue", "Union Street",
	"Washington Avenue", "Franklin Street",
}

// metro is the region a site's patients live in.
type metro struct {
	state  string
	area   int    // telephone area code
	zip3   string // first three digits of the ZIP code
	cities [4]string
}

// metros is indexed by Site.Index modulo its length: sites whose indexes
// differ modulo len(metros) never share an address or phone number.
var metros = [...]metro{
	{"MA", 617, "021", [4]string{"Boston", "Cambridge", "Somerville", "Brookline"}},
	{"OH", 614, "432", [4]string{"Columbus", "Dublin", "Westerville", "Grove City"}},
	{"MN", 612, "554", [4]string{"Minneapolis", "Saint Paul", "Bloomington", "Edina"}},
	{"FL", 941, "342", [4]string{"Sarasota", "Bradenton", "Venice", "North Port"}},
	{"OR", 503, "972", [4]string{"Portland", "Beaverton", "Gresham", "Hillsboro"}},
	{"TX", 512, "787", [4]string{"Austin", "Round Rock", "Cedar Park", "Pflugerville"}},
	{"CO", 303, "802", [4]string{"Denver", "Aurora", "Lakewood", "Arvada"}},
	{"NC", 919, "276", [4]string{"Raleigh", "Durham", "Cary", "Chapel Hill"}},
	{"WI", 608, "537", [4]string{"Madison", "Middleton", "Fitchburg", "Sun Prairie"}},
	{"AZ", 480, "852", [4]string{"Tempe", "Mesa", "Chandler", "Gilbert"}},
}

var emailDomains = [...]string{"example.com", "example.net", "example.org", "mail.example.com"}

// identity is a patient's identifying data.
type identity struct {
	given, family string
	mrn           string
	phone, email  string
	line, city    string
	state, zip    string
}

// fullName is "given family".
func (id identity) fullName() string { return id.given + " " + id.family }

// syllable returns the k-th consonant-vowel syllable, 0 <= k < syllables.
func syllable(k int) string {
	return string([]byte{consonants[k/len(vowels)], vowels[k%len(vowels)]})
}

// siteSyllables spells a site index, 0 <= k < syllables², as one syllable
// below syllables and two from there on.
func siteSyllables(k int) string {
	if k < syllables {
		return syllable(k)
	}
	return syllable(k/syllables) + syllable(k%syllables)
}

// codes holds a site's bijection offsets, drawn once from the site seed.
type codes struct {
	index                   int
	codeOff, mrnOff, telOff int
}

func newCodes(site Site) codes {
	r := rand.New(rand.NewPCG(site.Seed, 0x1d_e471_7135)) // #nosec G404 -- seeded synthetic data, reproducible from the site's seed
	return codes{
		index:   site.Index,
		codeOff: r.IntN(MaxPatients),
		mrnOff:  r.IntN(mrnRange),
		telOff:  r.IntN(phoneRange),
	}
}

// makeIdentity builds the identifying data of patient number i (which must
// be below MaxPatients) at the site; r supplies the non-unique parts.
func (c codes) makeIdentity(i int, female bool, r *rand.Rand) identity {
	code := (i*codeMul + c.codeOff) % MaxPatients
	var given string
	if female {
		given = femaleNames[r.IntN(len(femaleNames))]
	} else {
		given = maleNames[r.IntN(len(maleNames))]
	}
	// The suffix is the patient's code in three base-syllables digits,
	// then the site's index: one syllable below syllables, two from there
	// (the first of them never "ba"). Every syllable has two letters, so
	// distinct (code, site) pairs give distinct suffixes.
	suffix := syllable(code/(syllables*syllables)) +
		syllable(code/syllables%syllables) +
		syllable(code%syllables) +
		siteSyllables(c.index)
	family := surnames[r.IntN(len(surnames))] + "-" + strings.ToUpper(suffix[:1]) + suffix[1:]

	m := metros[c.index%len(metros)]
	tel := (i*phoneMul + c.telOff) % phoneRange
	return identity{
		given:  given,
		family: family,
		mrn:    fmt.Sprintf("MRN-%d-%07d", c.index, (i*mrnMul+c.mrnOff)%mrnRange),
		phone:  fmt.Sprintf("+1-%03d-%03d-%04d", m.area, 200+tel/10_000, tel%10_000),
		email: strings.ToLower(given) + "." + strings.ToLower(strings.ReplaceAll(family, "-", "")) +
			"@" + emailDomains[r.IntN(len(emailDomains))],
		line:  fmt.Sprintf("%d %s", 1+code/len(streets), streets[code%len(streets)]),
		city:  m.cities[r.IntN(len(m.cities))],
		state: m.state,
		zip:   fmt.Sprintf("%s%02d", m.zip3, r.IntN(100)),
	}
}
