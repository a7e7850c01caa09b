package io.clusterlvm.fence.config;

import java.io.IOException;
import java.io.StringReader;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.xml.XMLConstants;
import javax.xml.parsers.ParserConfigurationException;
import javax.xml.parsers.SAXParserFactory;
import org.xml.sax.Attributes;
import org.xml.sax.InputSource;
import org.xml.sax.Locator;
import org.xml.sax.SAXException;
import org.xml.sax.SAXParseException;
import org.xml.sax.helpers.DefaultHandler;

/**
 * A minimal element tree with line numbers. cluster.conf is small, so reading it whole first lets
 * validation look across sections (a device reference before its fencedevice) in one pass.
 *
 * @param line the line of the start tag's end (where SAX reports it; one line for usual tags)
 */
record XmlElement(
    String name, Map<String, String> attributes, int line, List<XmlElement> children) {

  /** Raised for input that is not well-formed XML; carries the parser's line. */
  static final class MalformedXmlException extends Exception {
    final int line;

    MalformedXmlException(int line, String message) {
      super(message);
      this.line = line;
    }
  }

  static XmlElement read(String xml) throws MalformedXmlException {
    SAXParserFactory factory = SAXParserFactory.newInstance();
    TreeBuilder builder = new TreeBuilder();
    try {
      // cluster.conf never needs external entities or DTDs; refusing them rules out XXE.
      factory.setFeature(XMLConstants.FEATURE_SECURE_PROCESSING, true);
      factory.setFeature("http://xml.org/sax/features/external-general-entities", false);
      factory.setFeature("http://xml.org/sax/features/external-parameter-entities", false);
      factory.setFeature("http://apache.org/xml/features/nonvalidating/load-external-dtd", false);
      factory.newSAXParser().parse(new InputSource(new StringReader(xml)), builder);
    } catch (SAXParseException e) {
      throw new MalformedXmlException(Math.max(e.getLineNumber(), 0), e.getMessage());
    } catch (SAXException e) {
      throw new MalformedXmlException(0, e.getMessage());
    } catch (ParserConfigurationException | IOException e) {
      // Reading from a String with the JDK's own parser: neither can happen.
      throw new IllegalStateException("XML parser unavailable", e);
    }
    return builder.root.build();
  }

  /** Mutable while SAX walks the document, frozen by {@link #build()}. */
  private static final class Node {
    final String name;
    final Map<String, String> attributes;
    final int line;
    final List<Node> children = new ArrayList<>();

    Node(String name, Map<String, String> attributes, int line) {
      this.name = name;
      this.attributes = attributes;
      this.line = line;
    }

    XmlElement build() {
      return new XmlElement(
          name,
          Collections.unmodifiableMap(attributes),
          line,
          children.stream().map(Node::build).toList());
    }
  }

  private static final class TreeBuilder extends DefaultHandler {
    private final Deque<Node> open = new ArrayDeque<>();
    private Locator locator;
    private Node root;

    @Override
    public void setDocumentLocator(Locator locator) {
      this.locator = locator;
    }

    @Override
    public void startElement(String uri, String localName, String qName, Attributes atts) {
      Map<String, String> attributes = new LinkedHashMap<>();
      for (int i = 0; i < atts.getLength(); i++) {
        attributes.put(atts.getQName(i), atts.getValue(i));
      }
      Node node = new Node(qName, attributes, locator == null ? 0 : locator.getLineNumber());
      if (open.isEmpty()) {
        root = node;
      } else {
        open.peek().children.add(node);
      }
      open.push(node);
    }

    @Override
    public void endElement(String uri, String localName, String qName) {
      open.pop();
    }
  }
}
