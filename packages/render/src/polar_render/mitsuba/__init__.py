"""Everything that talks to Mitsuba 3: variants, scene build/update, materials, textures, lights."""
