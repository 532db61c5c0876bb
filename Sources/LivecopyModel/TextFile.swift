// Reading whole text files (plans, policies) with one-line errors.

import Foundation

/// Reads a whole UTF-8 text file, with one-line errors.
func readTextFile(_ path: String, what: String) throws -> String {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw InputError("\(what) \(path) does not exist")
    }
    guard !isDirectory.boolValue else { throw InputError("\(what) \(path) is a directory") }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw InputError("\(what) \(path) cannot be read (permission denied?)")
    }
    guard let text = String(data: data, encoding: .utf8) else {
        throw InputError("\(what) \(path) is not UTF-8 text")
    }
    return text
}
