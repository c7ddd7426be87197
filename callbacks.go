package cacheme

import "gorm.io/gorm"

// registerCallbacks registers the plugin's GORM callbacks.
func (p *Plugin) registerCallbacks(db *gorm.DB) error {
	return nil
}
