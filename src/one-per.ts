/**
 * `make` run once per key object, on its first use: the same value is
 * returned for that key ever after, and is dropped with the key (a process
 * holds one platform, database handle or cache; tests hold several).
 */
export function onePer<Key extends object, Value>(make: (key: Key) => Value): (key: Key) => Value {
  const made = new WeakMap<Key, Value>();
  return (key) => {
    let value = made.get(key);
    if (value === undefined) {
      value = make(key);
      made.set(key, value);
    }
    return value;
  };
}
