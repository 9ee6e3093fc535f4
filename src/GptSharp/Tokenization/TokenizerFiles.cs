using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using GptSharp.IO;

namespace GptSharp.Tokenization;

/// <summary>
/// GPT-2's tokenizer in the files Hugging Face tools read, made from the same embedded <c>encoder.json</c> and
/// <c>vocab.bpe</c> as <see cref="Gpt2Tokenizer"/>: <c>vocab.json</c> and <c>merges.txt</c> (the slow GPT2Tokenizer; they
/// are OpenAI's two files renamed), <c>tokenizer.json</c> (the tokenizers library and transformers.js: a BPE model with
/// the byte-level pre-tokenizer and decoder, <c>&lt;|endoftext|&gt;</c> as an added special token),
/// <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c>.
/// </summary>
internal static class TokenizerFiles
{
    public const string VocabFile = "vocab.json", MergesFile = "merges.txt", TokenizerJsonFile = "tokenizer.json",
        TokenizerConfigFile = "tokenizer_config.json", SpecialTokensMapFile = "special_tokens_map.json";

    /// <summary>Writes the five files into <paramref name="directory"/> (each atomically); <paramref name="maxLength"/> is the model's context.</summary>
    public static void Write(string directory, int maxLength)
    {
        string encoderJson = Gpt2Vocabulary.ReadTextResource("GptSharp.encoder.json");
        string vocabBpe = Gpt2Vocabulary.ReadTextResource("GptSharp.vocab.bpe");
        WriteText(Path.Combine(directory, VocabFile), encoderJson);
        WriteText(Path.Combine(directory, MergesFile), vocabBpe);
        WriteJson(Path.Combine(directory, TokenizerJsonFile), json => TokenizerJson(json, encoderJson, Merges(vocabBpe)));
        WriteJson(Path.Combine(directory, TokenizerConfigFile), json => TokenizerConfig(json, maxLength));
        WriteJson(Path.Combine(directory, SpecialTokensMapFile), json =>
        {
            json.WriteStartObject();
            foreach (string key in (string[])["bos_token", "eos_token", "unk_token"]) json.WriteString(key, Gpt2Vocabulary.EndOfText);
            json.WriteEndObject();
        });
    }

    /// <summary>The merge rules of <c>vocab.bpe</c> ("Ġ t"), without its <c>#version</c> line.</summary>
    private static IEnumerable<string> Merges(string vocabBpe) =>
        vocabBpe.Split('\n').Where(line => line.Length > 0 && !line.StartsWith("#version", StringComparison.Ordinal));

    /// <summary>
    /// The layout <c>tokenizers</c> saves for GPT-2: merges as "a b" strings (every reader accepts them; GPT-2's symbols
    /// never contain a space, which byte-level BPE writes as Ġ), ByteLevel without a prefix space so "Hello" and
    /// " Hello" stay different tokens, as in GPT-2.
    /// </summary>
    private static void TokenizerJson(Utf8JsonWriter json, string encoderJson, IEnumerable<string> merges)
    {
        json.WriteStartObject();
        json.WriteString("version", "1.0");
        json.WriteNull("truncation");
        json.WriteNull("padding");
        json.WriteStartArray("added_tokens");
        json.WriteStartObject();
        json.WriteNumber("id", Gpt2Vocabulary.EndOfTextId);
        EndOfTextFlags(json);
        json.WriteEndObject();
        json.WriteEndArray();
        json.WriteNull("normalizer");
        ByteLevel(json, "pre_tokenizer", addPrefixSpace: false, trimOffsets: true);
        ByteLevel(json, "post_processor", addPrefixSpace: true, trimOffsets: false);
        ByteLevel(json, "decoder", addPrefixSpace: true, trimOffsets: true);
        json.WriteStartObject("model");
        json.WriteString("type", "BPE");
        json.WriteNull("dropout");
        json.WriteNull("unk_token");
        json.WriteString("continuing_subword_prefix", "");
        json.WriteString("end_of_word_suffix", "");
        json.WriteBoolean("fuse_unk", false);
        json.WriteBoolean("byte_fallback", false);
        json.WriteStartObject("vocab");
        using (var encoder = JsonDocument.Parse(encoderJson))
            foreach (var token in encoder.RootElement.EnumerateObject()) json.WriteNumber(token.Name, token.Value.GetInt32());
        json.WriteEndObject();
        json.WriteStartArray("merges");
        foreach (string merge in merges) json.WriteStringValue(merge);
        json.WriteEndArray();
        json.WriteEndObject();
        json.WriteEndObject();
    }

    /// <summary><c>&lt;|endoftext|&gt;</c> as an added token: matched as written, never split, special (skipped by decode(skip_special_tokens)).</summary>
    private static void EndOfTextFlags(Utf8JsonWriter json)
    {
        json.WriteString("content", Gpt2Vocabulary.EndOfText);
        json.WriteBoolean("single_word", false);
        json.WriteBoolean("lstrip", false);
        json.WriteBoolean("rstrip", false);
        json.WriteBoolean("normalized", true);
        json.WriteBoolean("special", true);
    }

    private static void ByteLevel(Utf8JsonWriter json, string name, bool addPrefixSpace, bool trimOffsets)
    {
        json.WriteStartObject(name);
        json.WriteString("type", "ByteLevel");
        json.WriteBoolean("add_prefix_space", addPrefixSpace);
        json.WriteBoolean("trim_offsets", trimOffsets);
        json.WriteBoolean("use_regex", true);
        json.WriteEndObject();
    }

    /// <summary>GPT2Tokenizer's settings as <c>save_pretrained</c> writes them for gpt2.</summary>
    private static void TokenizerConfig(Utf8JsonWriter json, int maxLength)
    {
        json.WriteStartObject();
        json.WriteString("tokenizer_class", "GPT2Tokenizer");
        json.WriteBoolean("add_bos_token", false);
        json.WriteBoolean("add_prefix_space", false);
        json.WriteStartObject("added_tokens_decoder");
        json.WriteStartObject(Gpt2Vocabulary.EndOfTextId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        EndOfTextFlags(json);
        json.WriteEndObject();
        json.WriteEndObject();
        json.WriteString("bos_token", Gpt2Vocabulary.EndOfText);
        json.WriteString("eos_token", Gpt2Vocabulary.EndOfText);
        json.WriteString("unk_token", Gpt2Vocabulary.EndOfText);
        json.WriteNull("pad_token");
        json.WriteBoolean("clean_up_tokenization_spaces", false);
        json.WriteString("errors", "replace");
        json.WriteNumber("model_max_length", maxLength);
        json.WriteEndObject();
    }

    private static void WriteText(string path, string text) => AtomicFile.Write(path, stream => stream.Write(Encoding.UTF8.GetBytes(text)));

    private static void WriteJson(string path, Action<Utf8JsonWriter> write) => AtomicFile.Write(path, stream =>
    {
        // Relaxed escaping keeps the byte-level symbols (Ġ, Ċ ...) readable; the output is still plain JSON.
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        write(json);
    });
}
