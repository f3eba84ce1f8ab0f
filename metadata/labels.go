package metadata

import "fmt"

// Partition labels of the payload disk, which the metadata names and the guest
// finds partitions by (formats.md 3.2, 3.3); the metadata partition's label is
// the profile's (Profile.MetadataLabel).
const (
	APKLabel   = "microdroid-apk"
	IdsigLabel = "microdroid-apk-idsig"
)

// Labels of the VM's state partitions (Android 13+), by which Microdroid's
// manager finds them: its instance image and its encrypted storage.
const (
	InstanceLabel = "vm-instance"
	StorageLabel  = "encryptedstore"
)

// ApexLabel is the label of the i-th APEX partition.
func ApexLabel(i int) string { return fmt.Sprintf("microdroid-apex-%d", i) }

// ExtraAPKLabel is the label of the i-th extra APK partition (Android 13+), which
// microdroid_manager finds by globbing extra-apk-*.
func ExtraAPKLabel(i int) string { return fmt.Sprintf("extra-apk-%d", i) }

// ExtraIdsigLabel is the label of the i-th extra APK's idsig partition.
func ExtraIdsigLabel(i int) string { return fmt.Sprintf("extra-idsig-%d", i) }
