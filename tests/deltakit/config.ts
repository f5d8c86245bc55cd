// What an app's build inlines (Vite: import.meta.env.VITE_...); the test passes them in.
export const API_URL = process.env.RUNSTREAM_DELTAKIT_API_URL as string;
export const API_KEY = process.env.RUNSTREAM_DELTAKIT_API_KEY as string;
