"""Recipe ``habitat``: SYNTHETIC deep-sea habitat design under several (ILLUSTRATIVE) jurisdictions."""
