"""Writes the auto-fit benchmark clip (the formula of tests/bench/autofit.rs, numpy noise) as
PNG frames in ./clip, so `ildiff export clip -o out.webm --preset telegram` can be timed with the
release binary. Needs numpy and pillow."""
import numpy as np
from PIL import Image
import os
os.makedirs('clip', exist_ok=True)
rng = np.random.default_rng(0x9E37)
y, x = np.mgrid[0:512, 0:512].astype(np.float32)
for i in range(90):
    t = i/90
    cx, cy = 180+150*t, 256+40*np.sin(t*2*np.pi)
    d = np.sqrt((x-cx)**2+(y-cy)**2)
    soft = np.clip((200-d)/40, 0, 1)
    grain = rng.integers(0, 16, (512,512)).astype(np.float32)/15 - 0.5
    a = np.where(soft > 0, np.clip((soft+0.1*grain)*255, 0, 255), 0).astype(np.uint8)
    g = rng.integers(0, 32, (512,512)).astype(np.float32)
    xf = x + 40*t
    r = (100+80*np.sin(xf/37)+g).astype(np.uint8)
    gg = (110+70*np.cos(y/23)+g).astype(np.uint8)
    b = (120+60*np.sin((xf+y)/51)+g).astype(np.uint8)
    Image.fromarray(np.dstack([r,gg,b,a])).save(f'clip/{i:03d}.png')
