; CrystFEL geometry for sfx-crystfel.yaml (lclstreamer msgpack over ZeroMQ).
; The image is the msgpack map entry "data", a 512 x 512 float32 array; photon
; energy and detector distance come from the same map, per frame.
photon_energy = photon_energy_ev eV
clen = detector_distance_mm mm
adu_per_photon = 1
res = 13333.3  ; 75 um pixels

data = data

p0/min_fs = 0
p0/max_fs = 511
p0/min_ss = 0
p0/max_ss = 511
p0/corner_x = -256.0
p0/corner_y = -256.0
p0/fs = x
p0/ss = y
