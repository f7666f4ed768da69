package credential

import (
	"crypto"
	_ "crypto/sha256" // registers SHA-256 for key thumbprints
)

// cryptoSHA256 names the thumbprint hash for key ids.
const cryptoSHA256 = crypto.SHA256
